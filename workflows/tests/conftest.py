"""Where the built binaries are, for the workflow integration tests."""
import os
import pathlib

BUILD = pathlib.Path(os.environ.get("DRAGON_BUILD_DIR", pathlib.Path(__file__).resolve().parents[2] / "build"))
ORCH = str(BUILD / "bin" / "dragon-orchestrate")
EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"
