package control

import "github.com/op-dbus/op-dbus/internal/journallog"

// logAt logs with a priority and journal fields through Options.Logger;
// without one, the line goes to Options.Log as it is.
func (s *Service) logAt(p journallog.Priority, f journallog.Fields, format string, args ...any) {
	if s.opts.Logger != nil {
		s.opts.Logger.Log(p, f, format, args...)
		return
	}
	s.opts.Log(format, args...)
}
