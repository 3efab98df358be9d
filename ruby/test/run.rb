# Runs the test files given (default: every test_*.rb here) with test-unit
# and ends with the project's closing line, "N passed, N failed". The
# extension is whichever rubyeventmachine.so comes first on the load path:
#   ruby -I build/ruby ruby/test/run.rb [test_file.rb...]
# helper.rb makes every test check that it is libem's.
require 'test/unit'
Test::Unit::AutoRunner.need_auto_run = false
require 'test/unit/testresult'
require 'test/unit/collector/descendant'
require 'test/unit/ui/console/testrunner'

files = ARGV.empty? ? Dir[File.join(__dir__, 'test_*.rb')].sort : ARGV
files.each { |f| require File.expand_path(f) }
suite = Test::Unit::Collector::Descendant.new.collect('libem EventMachine')
result = Test::Unit::UI::Console::TestRunner.run(suite)
failed = result.failure_count + result.error_count
# An omitted or pending test did not pass: it counts as neither here.
passed = [result.run_count - failed - result.omission_count - result.pending_count, 0].max
puts "#{passed} passed, #{failed} failed"
exit(failed.zero? ? 0 : 1)
