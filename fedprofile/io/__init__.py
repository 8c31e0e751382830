"""Reading partner tables and the memory-mapped matrix cache."""
