package org.trialmatcher.hapi;

import ca.uhn.fhir.batch2.api.IJobMaintenanceService;
import org.springframework.context.annotation.Configuration;
import org.springframework.scheduling.annotation.EnableScheduling;
import org.springframework.scheduling.annotation.Scheduled;

/**
 * Runs HAPI's batch job maintenance every two seconds. A Bulk Data $export is a batch job whose steps
 * advance at maintenance passes, which HAPI's own scheduler runs once a minute: an export of a few test
 * patients then takes minutes. A test fixture wants it in seconds.
 */
@Configuration
@EnableScheduling
public class BatchMaintenanceTicker {

	private final IJobMaintenanceService maintenance;

	public BatchMaintenanceTicker(IJobMaintenanceService maintenance) {
		this.maintenance = maintenance;
	}

	@Scheduled(initialDelay = 5000, fixedDelay = 2000)
	public void tick() {
		maintenance.triggerMaintenancePass();
	}
}
