"""The reliability suite: load, faults and bad input on the emulators, nothing lost or doubled (`make reliability`)."""
