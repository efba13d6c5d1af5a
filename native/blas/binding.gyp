{
  "targets": [
    {
      "target_name": "lora_studio_blas",
      "sources": ["src/sgemm.c", "src/kernels.c"],
      "cflags": ["-O3", "-fno-math-errno", "-fno-trapping-math", "-Wall"],
      "libraries": ["-ldl"]
    }
  ]
}
