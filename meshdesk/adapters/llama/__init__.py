"""llama.cpp (through llama-cpp-python) in child processes: the model host and the rpc worker."""
