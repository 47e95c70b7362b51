"""Project service: a user's projects, and the cascade that removes a project's data everywhere."""
