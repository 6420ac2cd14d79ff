"""Neural building blocks shared by the learned codecs (cae, gmm).

layers          GDN/IGDN, convolutions, residual blocks, sub-pixel upsampling, attention
entropy_models  quantisation, learned factorised prior, Gaussian / Gaussian-mixture likelihoods
integer         fixed-point export of probability tables (what the range coder may see)
models          the networks
store           loading registered weights (safetensors + registry.json), sha256 checks

Everything here imports torch, so import these modules only inside functions.
"""
