/* Prints rank, size, the processor name, and what MPICH made of the node
 * layout: the size of and rank in MPI_COMM_TYPE_SHARED (the ranks it
 * believes share this node, from PMI_process_mapping), plus DRAGON_NODE_ID
 * when the launcher set it. */
#include "common.h"

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  int rank = -1, size = -1, len = 0, lrank = -1, lsize = -1;
  char name[MPI_MAX_PROCESSOR_NAME];
  MPI_OK(rank, MPI_Comm_rank(MPI_COMM_WORLD, &rank));
  MPI_OK(rank, MPI_Comm_size(MPI_COMM_WORLD, &size));
  MPI_OK(rank, MPI_Get_processor_name(name, &len));
  CHECK(rank, size >= 1 && rank >= 0 && rank < size, "rank %d size %d", rank, size);
  MPI_Comm node;
  MPI_OK(rank, MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node));
  MPI_OK(rank, MPI_Comm_rank(node, &lrank));
  MPI_OK(rank, MPI_Comm_size(node, &lsize));
  const char *node_id = getenv("DRAGON_NODE_ID");
  printf("hello rank=%d size=%d host=%s node=%s local_rank=%d local_size=%d pid=%d\n", rank, size, name,
         node_id ? node_id : "-", lrank, lsize, (int)getpid());
  fflush(stdout);
  MPI_OK(rank, MPI_Barrier(MPI_COMM_WORLD));
  MPI_Comm_free(&node);
  MPI_Finalize();
  return 0;
}
