"""The pure scheduling core: no I/O, no clock, time is always passed in."""
