from ancestree.cli.main import run

run()
