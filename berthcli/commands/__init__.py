"""One module per verb: HELP, configure(parser) and main(client, args) -> exit code."""
