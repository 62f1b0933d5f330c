"""EREN ("Edit models by REading Notes", thunlp/EREN): edits are notes in a retrievable notebook.

- encoder.py: sentence embeddings (MiniLM offline by default; Contriever from the hub as an option)
- notebook.py: notes + faiss inner-product index (exact or HNSW), atomic save/load
- reader.py: the reader interface, a chat-model reader (greedy, left-padded batches) and a stub
- reader_load.py: load_reader (the kind from the model config's family) and load_chat_reader
- prompts.py: EREN's prompt templates; editor.py: two-step / one-step / unedited inference
- answers.py: answer normalisation and matching; evaluate.py: ES/BP/EQ on CounterFact-Hard and FEVER
- data.py: data loaders; scaling.py: recall@k vs notebook size; robustness.py: the robustness suite

Submodules import torch/transformers/faiss lazily where possible; importing this package loads nothing.
"""
