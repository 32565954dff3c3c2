"""The models mmrag runs, and the scoring that needs no model: text embedding (`embedding`, torch or the ONNX
export of `embedding_onnx`), BM25 sparse vectors (`sparse`), image vectors (`image_vectors`: CLIP towers in
`clip`, perceptual hashes in `perceptual`), lexical term matching (`lexical`), the LLM provider chain (`llm`) and
the offline extractive answerer (`extractive`). No NATS: callers hand in text, pixels and settings.
"""
