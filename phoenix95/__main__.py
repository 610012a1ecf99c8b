from phoenix95.cli.main import main

main()
