"""Generated gRPC code of the vpool.v1 contract (`make proto`); never edit these files by hand."""
