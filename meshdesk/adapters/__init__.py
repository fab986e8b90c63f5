"""One external library each, implementing the interfaces that node defines."""
