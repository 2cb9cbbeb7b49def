package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// StartStandby makes a streaming replica of s and starts it as a hot
// standby: it stops s (fast), copies its data directory (replication slots
// included, as they are at that moment), starts s again and starts the copy
// with primary_conninfo pointing at s over TCP (with dbname=postgres, which
// slot synchronisation needs). extraConf lines are added
// to the standby's settings (primary_slot_name, hot_standby_feedback,
// sync_replication_slots, ...). The caller must Close the standby.
//
// A copy of a stopped cluster needs no base backup tool, so this works for
// every version, whatever client programs are installed.
func (s *Server) StartStandby(extraConf ...string) (_ *Server, err error) {
	if s.externalDSN != "" {
		return nil, errors.New("start standby: the external server (WALHOOK_TEST_DSN) cannot be copied")
	}
	sb, err := newServer(s.bin)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			if cerr := sb.Close(); cerr != nil {
				err = errors.Join(err, cerr)
			}
		}
	}()
	if err := s.copyTo(sb); err != nil {
		return nil, err
	}
	sb.conf = append(append([]string{}, s.conf...),
		"primary_conninfo = "+quoteConf("host=127.0.0.1 port="+strconv.Itoa(s.Port())+" user=postgres dbname=postgres application_name=standby"),
		"hot_standby = on")
	sb.conf = append(sb.conf, extraConf...)
	if err := sb.writeFile("standby.signal", ""); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if err := sb.writeConf(port, sb.conf); err != nil {
		return nil, err
	}
	if err := sb.pgCtlStart(); err != nil {
		return nil, fmt.Errorf("start standby: %w", err)
	}
	sb.port = port
	sb.running = true
	if err := sb.waitReady(); err != nil {
		return nil, fmt.Errorf("start standby: %w", err)
	}
	return sb, nil
}

// copyTo stops s, copies its data directory into sb's, and starts s again.
func (s *Server) copyTo(sb *Server) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || !s.running {
		return errors.New("start standby: the primary is not running")
	}
	if err := s.pgCtlStop("fast"); err != nil {
		return fmt.Errorf("start standby: %w", err)
	}
	s.running = false
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	out, copyErr := s.owner.command(ctx, "/", "cp", "-a", s.dataDir, sb.dataDir).CombinedOutput()
	if err := s.pgCtlStart(); err != nil {
		return fmt.Errorf("start standby: restart the primary: %w", err)
	}
	s.running = true
	if err := s.waitReady(); err != nil {
		return fmt.Errorf("start standby: restart the primary: %w", err)
	}
	if copyErr != nil {
		return fmt.Errorf("start standby: copy the data directory: %w\n%s", copyErr, bytesTrim(out))
	}
	// The copy starts a log of its own.
	if err := os.Remove(filepath.Join(sb.dataDir, logFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("start standby: %w", err)
	}
	return nil
}

// Promote ends recovery on a standby (pg_ctl promote) and waits until it
// takes writes, on a new timeline.
func (s *Server) Promote() error {
	if s.externalDSN != "" {
		return errors.New("promote: the external server (WALHOOK_TEST_DSN) is not a standby of pgtest's")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	out, err := s.owner.command(ctx, s.dir, s.bin.pgCtl, "-D", s.dataDir, "-w", "-t", pgCtlWait, "promote").CombinedOutput()
	if err != nil {
		return fmt.Errorf("promote: pg_ctl: %w\n%s", err, bytesTrim(out))
	}
	return nil
}
