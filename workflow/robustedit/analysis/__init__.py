"""Analysis behind the REP paper's figures (pure functions; the scripts do the file I/O).

    whiten.py     similarity of keys in the space whitened by ROME's second moment C
    keys.py       Figure 3: the edit key against its rephrased / shuffled / long-context variants, PCA
    unrelated.py  Figure 4: WikiText prefixes whose keys resemble a subject's key
    values.py     Figure 5: value norms before and after ROME edits
    tables.py     CSV rows in and out (atomic writes)
    plots.py      the matplotlib figures (Agg backend, atomic writes)
"""
