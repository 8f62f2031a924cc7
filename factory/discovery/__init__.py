"""The discovery loop's sources: each turns evidence (logs, coverage, dependencies) into tickets."""
