"""The wire contract between host and agent: agent.proto and its committed generated stubs."""
