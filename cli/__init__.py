"""The `kubedetect` command line: the outer layer, beside the other adapters (`serving/`,
`components/`, `pipelines/`). It may import all of them and the core; nothing imports it.
"""
