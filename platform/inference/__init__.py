"""Transfer of audio arrays and files of any length with a loaded bundle."""
