package config

import "strings"

// closest returns the known key most like key, or "" when none is close
// enough to be a likely typo. Case and the choice of "-" or "_" are ignored,
// so batchSize and batch-size both suggest batch_size.
func closest(key string, known []string) string {
	key = normalizeKey(key)
	best, bestDist := "", len(key)/3+1 // at most about one edit in three
	for _, k := range known {
		if dist := editDistance(key, normalizeKey(k)); dist < bestDist {
			best, bestDist = k, dist
		}
	}
	return best
}

func normalizeKey(s string) string {
	return strings.NewReplacer("_", "", "-", "").Replace(strings.ToLower(s))
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
