"""The parts of the Cheers network, one concept a file."""
