{
  "targets": [
    {
      "target_name": "tcp_splice",
      "sources": ["tcp_splice.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"]
    }
  ]
}
