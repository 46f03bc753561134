"""The Checkpointer's I/O machinery (private): file format, raw disk I/O, host staging, background
writer, DCP shards."""
