from flipscope.cli import main

main()
