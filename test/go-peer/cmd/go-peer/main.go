// go-peer runs the Go original's output side, unchanged, as a process the
// tests talk to over its socket (JETKVM_AUDIO_OUTPUT_SOCKET, as the original reads it).
//
//	go-peer server [-every 1ms] [-linger 500ms]
//	    NewAudioServer + Start; says "listening" on stdout, then reads frames from
//	    stdin (each a u32 little-endian length, then that many bytes) and hands each
//	    to SendFrame, one every -every. At end of input it waits -linger for the
//	    last writes, prints "total=N dropped=N" (GetServerStats) and Closes.
//	go-peer client -out FILE [-reconnects N]
//	    NewAudioClient + Connect; says "connected" on stdout, then ReceiveFrame in a
//	    loop, each payload written to FILE in the same length-prefixed form. When
//	    ReceiveFrame fails it prints "error: ..." on stdout; with reconnects left it
//	    does what a caller of the original must (Disconnect, since Connect alone
//	    returns at once while the client still counts as running; then Connect,
//	    again while it fails, for up to 20 s) and goes on, else it prints
//	    "frames=N" and exits: 0 if the server ended the stream (EOF), 1 on any
//	    other failure. A failed first Connect prints its error, exit 1.
package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/jetkvm/kvm/internal/audio"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: go-peer server|client [flags]")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "server":
		server(os.Args[2:])
	case "client":
		client(os.Args[2:])
	default:
		fmt.Fprintf(os.Stderr, "go-peer: unknown mode %q (allowed: server, client)\n", os.Args[1])
		os.Exit(2)
	}
}

func server(args []string) {
	flags := flag.NewFlagSet("server", flag.ExitOnError)
	every := flags.Duration("every", time.Millisecond, "pause between frames handed to SendFrame")
	linger := flags.Duration("linger", 500*time.Millisecond, "wait after the last frame before Close")
	flags.Parse(args)

	s, err := audio.NewAudioServer()
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	if err := s.Start(); err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("listening")

	in := bufio.NewReader(os.Stdin)
	var size [4]byte
	for {
		if _, err := io.ReadFull(in, size[:]); err != nil {
			break
		}
		// SendFrame keeps the slice until its processor writes it: a fresh one each time.
		frame := make([]byte, binary.LittleEndian.Uint32(size[:]))
		if _, err := io.ReadFull(in, frame); err != nil {
			break
		}
		if err := s.SendFrame(frame); err != nil {
			fmt.Println("error:", err)
		}
		time.Sleep(*every)
	}
	time.Sleep(*linger)
	total, dropped, _ := s.GetServerStats()
	fmt.Printf("total=%d dropped=%d\n", total, dropped)
	s.Close()
}

func client(args []string) {
	flags := flag.NewFlagSet("client", flag.ExitOnError)
	path := flags.String("out", "", "file the received payloads are written to")
	reconnects := flags.Int("reconnects", 0, "times to Disconnect and Connect again after ReceiveFrame fails")
	flags.Parse(args)
	file, err := os.Create(*path)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	out := bufio.NewWriter(file)

	c := audio.NewAudioClient()
	if err := c.Connect(); err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("connected")
	frames := 0
	var size [4]byte
	for {
		frame, err := c.ReceiveFrame()
		if err != nil {
			fmt.Println("error:", err)
			if *reconnects > 0 {
				*reconnects--
				out.Flush()
				c.Disconnect()
				deadline := time.Now().Add(20 * time.Second)
				for err = c.Connect(); err != nil && time.Now().Before(deadline); err = c.Connect() {
				}
				if err != nil {
					fmt.Println("error:", err)
					break
				}
				fmt.Println("connected")
				continue
			}
			out.Flush()
			file.Close()
			fmt.Printf("frames=%d\n", frames)
			if errors.Is(err, io.EOF) {
				os.Exit(0)
			}
			os.Exit(1)
		}
		binary.LittleEndian.PutUint32(size[:], uint32(len(frame)))
		out.Write(size[:])
		out.Write(frame)
		frames++
	}
	out.Flush()
	file.Close()
	fmt.Printf("frames=%d\n", frames)
	os.Exit(1)
}
