"""Dragon's native API: ProcessGroup, ProcessTemplate, Process, Popen."""
