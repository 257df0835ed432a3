"""`tideflow lsp`: a language server for `.flow` files over the compiler.

`server.build_server()` makes the server; `index` is the model the features share
(an `Analysis` per open document, its `SymbolIndex`, `node_at`); `workspace` holds
the documents and the include graph; each other module is one feature with a
`register(server)` function. pygls and lsprotocol come with `tideflow[lsp]`.
"""
