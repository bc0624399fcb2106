from gdr_cli.app import run

run()
