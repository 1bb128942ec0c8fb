;; Prints one line through WASI: the smallest job formnet runs (`form submit --spec job.toml`).
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 8) "hello from formnet\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 8))   ;; the one iovec: where the text starts
    (i32.store (i32.const 4) (i32.const 19))  ;; and its length
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 40)))))
