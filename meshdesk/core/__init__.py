"""Pure logic: standard library only, no IO, clocks or randomness (time and random bytes are parameters)."""
