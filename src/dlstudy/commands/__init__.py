"""One module per CLI subcommand (registered in dlstudy.cli.COMMANDS)."""
