"""Exchange connectors. `paper` is the default; a live connector implements `ExchangeConnector`."""
