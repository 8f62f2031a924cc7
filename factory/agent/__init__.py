"""The coding agent: tools, prompts, transcript, and one step of the loop."""
