"""Ways to play the instrument: the REPL here; OSC, MIDI and clocks alongside it."""
