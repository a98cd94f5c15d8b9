"""The checked load of an experiment: what only building can tell (the model on the meta device, the sweep
block against the experiment), above config/ because it imports components/ and sweeps/."""
