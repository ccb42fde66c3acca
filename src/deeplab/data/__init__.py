"""Data: reading images and labels safely (``io``), pixel normalisation (``normalization``), the dataset core
(``dataset``), finding files on disk (``layout``), the named datasets (``datasets``), joint transforms
(``transforms``) and the pre-flight scan of every file (``checks``)."""
