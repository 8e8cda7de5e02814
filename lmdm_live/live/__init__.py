"""The instrument: the stream, the real-time engine, live inputs and the parameter vocabulary."""
