"""Look inside a trained run: word vectors, the logit lens, attention maps, sentence embeddings.

    insp = Inspector("runs/tiny")                 # lmforge.inspect("runs/tiny") does the same
    insp.neighbours("file", k=10)                 # {"word", "vectors", "neighbours": [{"word", "similarity"}]}
    insp.neighbours("file", vectors="contextual")
    insp.similarity("file", "path"); insp.analogy("list", "append", "dict")
    insp.word_map(top=150)                        # RUN/inspect/map-static.png + map-static.html
    insp.logit_lens("def main():")                # RUN/inspect/layers.png
    insp.attention("import os")                   # RUN/inspect/attention-L<n>.png
    insp.sentences("sentences.txt")               # most similar pairs of lines

Words. A "word" is a run of letters as the BPE pre-tokenizer cuts it (`" word"`, letters only).
The candidates are the words of the run's validation text plus the single-token words of the
vocabulary that the training text uses; a word outside both is unknown (an error).

Vectors (`vectors=`):
- static: the mean of the input embeddings of the tokens of `" word"` (with the leading space,
  the form a word takes mid-sentence); for a one-token word that is its embedding row.
- contextual: the residual stream after `layer` (default: the middle of the network, where
  similarity is usually best; 0 = the embeddings, n_layer = the last block), RMS-normalised
  per token as the next block sees it, averaged over the word's tokens, then over all of its
  occurrences in the validation text (non-overlapping windows of the model's context).
  Both kinds share a large common direction, so their mean over the candidates is subtracted
  before cosine similarity.

Layers are numbered as the residual stream: 0 = after the embedding, k = after block k; the
attention of block k is "layer k" too. Each text is read after an `<|endoftext|>` token, as
every document is in training. Causal runs (the default) see only the past; masked runs
(`train.objective: masked`) see the whole text, and their logit lens predicts each position's
own token rather than the next one.
"""

from lmforge.inspection.inspector import Inspector
from lmforge.inspection.pictures import format_lens, format_neighbours, to_json
from lmforge.inspection.vectors import VECTORS, WordVectors, Words

__all__ = ["Inspector", "VECTORS", "WordVectors", "Words", "format_lens", "format_neighbours", "to_json"]
