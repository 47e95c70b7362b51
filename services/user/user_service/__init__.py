"""User service: accounts, password login, and the RS256 tokens the gateway verifies."""
