"""What kubedetect reads and writes, and how: paths and URIs (`fs`), TFRecord files (`tfrecord`),
images (`images`: the one decode and resize of preprocessing, evaluation and serving), the class
map (`labels`, `labels.json`) and the model card (`modelcard`, `model.json`).

Every other part of the core imports these; they import nothing of kubedetect but `errors`, and no
TensorFlow (`fs` hands URIs to `tf.io.gfile` only when one is given), so that serving can use them.
"""
