"""Paper studies: data protocols, the leakage guard, grids of classifier runs and their tables
(``mammogan table``). Studies call training and evaluation; nothing below imports them."""
