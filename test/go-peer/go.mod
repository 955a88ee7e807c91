// The Go original's output side (its ipc.go, copied in at test time, never kept
// here) built with stand-ins of our own for the rest of its package and modules.
module github.com/jetkvm/kvm

go 1.19

require github.com/rs/zerolog v0.0.0

replace github.com/rs/zerolog => ./zerolog
