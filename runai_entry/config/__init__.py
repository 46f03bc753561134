"""The configuration: every option once, its sources and precedence, a typed object built once."""
