"""Development networks for the tests and the demo: a bcoin regtest node and a wallet to fund."""
