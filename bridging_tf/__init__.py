"""bridging_tf: does a debiased model still leak the private attribute?

Keras 3 / TensorFlow implementation of "Bridging the gap between debiasing
and privacy for deep learning" (Barbano, Tartaglione, Grangetto, 2021):
debiasing methods (Vanilla, EnD, RUBi, LearnedMixin, ReBias) as Keras model
wrappers, the paper's datasets as tf.data pipelines, and attacks on the
trained bottleneck.
"""

__version__ = "0.1.0"
