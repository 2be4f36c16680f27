from fromnet.cli import main

main()
