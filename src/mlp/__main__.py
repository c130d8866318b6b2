from mlp.cli import main

main()
