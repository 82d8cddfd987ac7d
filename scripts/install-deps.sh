#!/usr/bin/env bash
# Installs the Debian 12 packages Dragon needs, idempotently: only what is
# missing is installed, and `apt-get update` runs only when something is.
#
#   scripts/install-deps.sh [build|test|bench|lint|jupyter|slurm|mpi|all]...   (default: all)
#
# Profiles are cumulative in practice (test and bench need build). `slurm`
# stands alone: the daemons scripts/slurm-cluster.sh runs as a 4-node test
# cluster on this machine (docs/slurm.md); `all` leaves it out. `mpi` also
# stands alone: Debian's MPICH (mpicc.mpich, mpiexec.hydra), Open MPI
# (mpicc.openmpi, mpirun.openmpi) and mpi4py, NetPIPE for both, and Slurm's
# PMI-2 client library, for the real-MPI test programs (tests/mpi/).
# Installing Open MPI switches the mpicc/mpiexec alternatives to it: always
# name mpicc.mpich / mpiexec.hydra / mpicc.openmpi / mpirun.openmpi.
set -euo pipefail

build_pkgs=(
  build-essential cmake ninja-build pkg-config git
  libasio-dev libspdlog-dev libfmt-dev libcli11-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libhwloc-dev   # topology discovery and binding (procgroup placement)
  libssl-dev     # libcrypto: HMAC-SHA256 peer authentication (transport)
  libpmix-dev    # OpenPMIx 4.2.2 server API (pkg-config pmix): the agents' PMIx server (--pmi pmix)
  python3-dev pybind11-dev python3-cloudpickle   # the Python package: dragon._core, Python-callable targets
  libyaml-cpp-dev  # workflows/: the YAML workflow loader
)
jupyter_pkgs=(
  python3-ipykernel python3-jupyter-client   # the "Python 3 (Dragon)" kernel (python -m dragon.jupyter)
  python3-jupyter-server                     # dragon-jupyter: the server inside the runtime
  python3-nbclassic                          # its browser pages (the classic notebook, a server extension)
  python3-nbclient python3-nbformat          # executing notebooks (tests, examples/cookbook)
)
test_pkgs=(
  python3 python3-pytest python3-numpy   # numpy: buffers of the Python channel tests
  libpython3.11-testsuite   # CPython's own multiprocessing tests, run for the dragon start method
  clang libclang-rt-14-dev   # libFuzzer and sanitizer runtimes for clang builds
  graphviz   # dot: the workflow tests draw --dag .svg
  "${jupyter_pkgs[@]}"       # tests/python/test_jupyter.py executes notebooks and a server
)
bench_pkgs=(
  python3 mpich hyperfine
  snakemake graphviz   # bench/workflows.py: Snakemake, the workflow peer; dot draws --dag .svg
  libmpich-dev   # mpicc.mpich: bench/pmi.py runs MPI programs built from tests/mpi/
  libopenmpi-dev # mpicc.openmpi: bench/pmix.py runs the Open MPI builds of tests/mpi/
  redis-server python3-redis   # bench/ddict.py: a real Redis on a loopback port, the dictionary's peer
  python3-dask python3-distributed python3-mpi4py openmpi-bin   # bench/pool.py: Dask LocalCluster and mpi4py.futures peers
)
mpi_pkgs=(
  mpich libmpich-dev   # MPICH 4.0.2 (ch4:ucx), mpicc.mpich and mpiexec.hydra
  netpipe-mpich2       # NPmpich2: a real MPI point-to-point benchmark
  libpmi2-0-dev        # Slurm's PMI-2 client (libpmi2.so, slurm/pmi2.h): a real peer for a PMI-2 server
  openmpi-bin libopenmpi-dev   # Open MPI 4.1.4 (PMIx client: OpenPMIx 4.2.2), mpicc.openmpi, mpirun.openmpi
  python3-mpi4py       # mpi4py 3.1.4, built against Open MPI
  netpipe-openmpi      # NPopenmpi
)
lint_pkgs=(
  clang-tidy clang-format
)
slurm_pkgs=(
  slurm-wlm munge   # slurmctld, slurmd and the clients; munge authenticates them
  libpmix-dev       # srun --mpi=pmix dlopens pmix2/lib/libpmix.so, which only -dev ships
)

want=()
[ $# -eq 0 ] && set -- all
for profile in "$@"; do
  case "$profile" in
    build) want+=("${build_pkgs[@]}") ;;
    test)  want+=("${build_pkgs[@]}" "${test_pkgs[@]}") ;;
    bench) want+=("${build_pkgs[@]}" "${bench_pkgs[@]}") ;;
    lint)  want+=("${build_pkgs[@]}" "${lint_pkgs[@]}") ;;
    jupyter) want+=("${jupyter_pkgs[@]}") ;;
    slurm) want+=("${slurm_pkgs[@]}") ;;
    mpi)   want+=("${mpi_pkgs[@]}") ;;
    all)   want+=("${build_pkgs[@]}" "${test_pkgs[@]}" "${bench_pkgs[@]}" "${lint_pkgs[@]}") ;;
    *) echo "install-deps: unknown profile '$profile' (build|test|bench|lint|jupyter|slurm|mpi|all)" >&2; exit 2 ;;
  esac
done

missing=()
for p in $(printf '%s\n' "${want[@]}" | sort -u); do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages: ${missing[*]}" >&2
  echo "install-deps: run as root (or: sudo $0 $*)" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
