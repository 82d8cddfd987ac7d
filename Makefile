# The front door. `make demo` and `make test` work on a fresh Debian 12
# machine as root: they install what is missing first.
#
#   make            build (preset dev: optimised, debug info, in build/)
#   make demo       install deps, build, run the demo
#   make test       install deps, build, run unit, stress, integration, system (virtual clusters),
#                   slurm (a real 4-node Slurm cluster on this machine) and mpi (real MPICH programs
#                   and Slurm's PMI-2 client under --pmi, one node and virtual clusters) tests, the
#                   Python package's tests (tests/python, in the integration and system labels) and a
#                   fuzz smoke run
#   make test-asan  the same tests under AddressSanitizer + UBSan (build-asan/; the Python package is
#                   not built there: an instrumented extension cannot load into a plain interpreter)
#   make test-tsan  the same tests under ThreadSanitizer (build-tsan/)
#   make bench      start-up, launch (1000 and 4096 processes, one and 4 nodes), channels (local and
#                   across 2 virtual nodes), transport and PMI (MPI_Init of 64 ranks, fences of 256 ranks over
#                   4 virtual nodes, against mpiexec.hydra), PMIx (Open MPI's MPI_Init of 32 ranks against
#                   mpirun.openmpi, and srun --mpi=pmix when a Slurm cluster is up) and Python package
#                   (ProcessGroup against the C++ API and multiprocessing, channels against Pipe) and
#                   multiprocessing's dragon start method against fork, forkserver and spawn, and
#                   the distributed dictionary against redis-server and Manager().dict(), and the
#                   cookbook's inference service (1, 4, 16 workers against inline calls) and pipeline
#                   (against stdlib multiprocessing with fork), one node and 2 virtual nodes:
#                   benchmarks, each against its peer in the same run
#   make lint       clang-tidy over the sources
#   make clean

# CI builds with warnings as errors (the `ci` preset shares build/ with `dev`).
PRESET ?= $(if $(CI),ci,dev)
JOBS   ?= $(shell nproc)
CTEST  := ctest --output-on-failure -j1


.PHONY: all build deps-build deps-test deps-bench deps-lint demo test test-fuzz \
        test-asan test-tsan bench lint clean

all: build

deps-build:
	@scripts/install-deps.sh build
deps-test:
	@scripts/install-deps.sh test slurm mpi
deps-bench:
	@scripts/install-deps.sh bench
deps-lint:
	@scripts/install-deps.sh lint

build: deps-build
	cmake --preset $(PRESET) >/dev/null
	cmake --build build -j $(JOBS)

demo: deps-bench build
	@scripts/demo.sh

test: deps-test build
	$(CTEST) --test-dir build -L 'unit|stress|integration|system|slurm|mpi'
	$(MAKE) --no-print-directory test-fuzz

test-fuzz: deps-test
	cmake --preset fuzz >/dev/null
	cmake --build build-fuzz -j $(JOBS) --target fuzz_codec fuzz_transport_handshake fuzz_hostlist fuzz_pmi fuzz_workflow
	$(CTEST) --test-dir build-fuzz -L fuzz

test-asan: deps-test
	cmake --preset asan >/dev/null
	cmake --build build-asan -j $(JOBS)
	$(CTEST) --test-dir build-asan -L 'unit|stress|integration|system|mpi'

test-tsan: deps-test
	cmake --preset tsan >/dev/null
	cmake --build build-tsan -j $(JOBS)
	$(CTEST) --test-dir build-tsan -L 'unit|stress|integration|system'

bench: deps-bench build
	/usr/bin/python3 bench/startup.py
	/usr/bin/python3 bench/launch.py
	/usr/bin/python3 bench/pmi.py
	/usr/bin/python3 bench/pmix.py
	/usr/bin/python3 bench/python.py
	/usr/bin/python3 bench/mp_bench.py
	/usr/bin/python3 bench/ddict.py
	/usr/bin/python3 bench/pool.py
	/usr/bin/python3 bench/workflows.py
	/usr/bin/python3 bench/cookbook.py
	build/bin/dragon-bench-channels
	build/bin/dragon-bench-transport
	build/bin/dragon-bench-remote-channels

lint: deps-lint build
	run-clang-tidy -p build -quiet $(shell git ls-files '*.cpp' | grep -v '^tests/fuzz/')

clean:
	rm -rf build build-release build-asan build-tsan build-fuzz
