"""The `tokenrota` command line: arguments, `serve`, start-up checks, operator commands."""
