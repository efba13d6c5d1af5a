{
  "targets": [
    {
      "target_name": "lora_studio_blas",
      "sources": ["src/sgemm.c"],
      "cflags": ["-O2", "-Wall"],
      "libraries": ["-ldl"]
    }
  ]
}
