package relay

import "sync"

// wakeup is a broadcast to the runners: a runner that waits takes C
// before it looks at what it waits for, and every poke closes that
// channel and makes a new one, so no change between the look and the
// wait is missed.
type wakeup struct {
	mu sync.Mutex
	c  chan struct{}
}

// C is closed by the next poke.
func (w *wakeup) C() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.c == nil {
		w.c = make(chan struct{})
	}
	return w.c
}

// poke wakes every runner waiting on C.
func (w *wakeup) poke() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.c != nil {
		close(w.c)
		w.c = nil
	}
}
