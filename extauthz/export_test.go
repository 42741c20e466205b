package extauthz

// ResetAnswerCache drops every identity of the answer cache (benchmarks).
func (s *Server) ResetAnswerCache() {
	c := s.answers
	c.mu.Lock()
	defer c.mu.Unlock()
	for key, p := range c.m {
		c.drop(key, p)
	}
}

// AnswerCacheRecount adds up the sizes of the identities the answer cache
// holds, to compare with what it counted.
func (s *Server) AnswerCacheRecount() (entries, bytes int) {
	c := s.answers
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.m {
		p.mu.Lock()
		bytes += p.size
		p.mu.Unlock()
	}
	return len(c.m), bytes
}
